"""logs/parsers"""
