"""The shared contract of inferkube: API models and the names both the operator and runtime use.

This package imports neither ``inferkube.operator`` nor ``inferkube.runtime``.
"""
