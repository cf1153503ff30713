"""greenshift.shift"""
