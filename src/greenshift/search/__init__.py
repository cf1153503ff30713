"""greenshift.search"""
