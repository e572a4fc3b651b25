"""Looking at a collection through its codes: likely label errors, duplicates and leaks, outliers, similar images."""
