"""C++ sources of zobench's compiled helpers (built on first use; see zobench.optim.philox)."""
