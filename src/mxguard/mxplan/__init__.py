"""mxplan"""
