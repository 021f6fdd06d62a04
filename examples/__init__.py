"""Examples of user models and data for NeurFlow Graph (not part of the product's API)."""
