"""Beam PTransforms and DoFns of NDCL: one composite transform per module."""
