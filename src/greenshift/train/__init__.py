"""greenshift.train"""
