"""greenshift.objectives"""
