# The controller's crate version (Cargo.toml): the default image tag follows it.
__version__ = "0.1.0"
