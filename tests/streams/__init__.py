"""Tests of infermeter.streams."""
