"""Full-ranking evaluation, noise-identification metrics and, in ``stats``, the package's one
copy of AUC, Cohen's kappa, folds grouped by user, cross-fitting and the bootstrap."""
