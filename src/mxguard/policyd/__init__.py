"""policyd"""
