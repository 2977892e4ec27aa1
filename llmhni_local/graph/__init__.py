"""Graph construction: the normalised bipartite adjacency (CSR), PyG conversions, edge dropout."""
