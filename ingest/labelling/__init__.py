"""Concept labellers: they name what a neuron group detects and store it with graphmodel.labels."""
