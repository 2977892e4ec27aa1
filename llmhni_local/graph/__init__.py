"""Graph construction: normalised bipartite adjacency (CSR), edge dropout, denoised graphs."""
