"""faust_fixes"""
