"""Tests of ``rawepoll compare``: its statistics, its peer servers, and a whole small run."""
