//! Queue providers behind one trait, and the registry that polls them.
