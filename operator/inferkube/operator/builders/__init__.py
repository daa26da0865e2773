"""Pure builders, one module per child kind: (spec, metadata, operator settings, observed facts) -> dict.

No I/O, no globals, no clock. ``inferkube.operator.render`` assembles them into the list of children.
"""
