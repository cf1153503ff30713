"""greenshift.report"""
