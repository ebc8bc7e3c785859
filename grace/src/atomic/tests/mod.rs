//! Tests of the pointer types.
