"""greenshift.store"""
