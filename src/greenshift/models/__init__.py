"""greenshift.models"""
