"""Capacity trends: collecting resource metrics and forecasting when each runs out."""
