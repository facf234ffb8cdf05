"""The stock service: reserves, sells and gives back products for orders; owns the prices."""
