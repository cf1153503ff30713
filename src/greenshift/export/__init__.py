"""greenshift.export"""
