"""The package version, defined once: ``bayesian_hf.__version__`` re-exports it and pyproject.toml reads it
(``[tool.setuptools.dynamic]``) without importing the package."""

__version__ = "0.1.0"
