"""Tests of the load generator (``rawepoll bench``)."""
