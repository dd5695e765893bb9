"""canrun: predict ContainerCannotRun before it happens.

The public Python API is small on purpose: compose ``config.Settings``,
``config.open_engine`` them, and call ``engine.validator.check(workloads, pool)``;
everything else is internal and may change.
"""

from canrun.version import package_version

__version__ = package_version()
