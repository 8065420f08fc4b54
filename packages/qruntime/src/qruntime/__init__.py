"""qruntime"""
