//! The schema: the names and shapes every layer above speaks in. Dimensions, weight locations
//! and their standard shapes, activation locations, the TDB state-dict layout, and the macro
//! that gives each enum its names.
pub mod activations;
pub mod dims;
pub mod layout;
pub mod names;
pub mod weights;
