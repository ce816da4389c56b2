"""logs/render"""
