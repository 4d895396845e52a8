//! Tests of the compiler sandbox.
