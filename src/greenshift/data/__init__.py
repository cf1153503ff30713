"""greenshift.data"""
