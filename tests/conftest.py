"""Shared pytest setup: every test talks to real servers on loopback that it starts itself."""

from tests.helpers.dns_fixtures import dns_server  # noqa: F401
from tests.helpers.redis_server import redis_server, redis_session  # noqa: F401
