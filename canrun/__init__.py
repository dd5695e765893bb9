"""canrun: predict ContainerCannotRun before it happens.

The public Python API is small on purpose: build ``Settings``, ``open_engine``
them, and call ``engine.validator.check(workloads, pool)``; everything else is
internal and may change.
"""

__version__ = "0.1.0"
