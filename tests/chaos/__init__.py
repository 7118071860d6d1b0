"""The chaos suite (make test-chaos): Lattice's processes killed -9 while people use it."""
