//! The DStream operators, one per module. Each adds methods to [`DStream`](crate::DStream).
//!
//! | module | operators |
//! |---|---|
//! | [`map`] | `map`, `flat_map`, `filter`, `map_values` |
//! | [`fan_out`] | `fan_out2`, `fan_out3`, `fan_out4` |
//! | [`union`] | `union` |
//! | [`repartition`] | `repartition` |
//! | [`count`] | `count` |
//! | [`count_by_value`] | `count_by_value` |
//! | [`reduce`] | `reduce` |
//! | [`reduce_by_key`] | `reduce_by_key` |
//! | [`group_by_key`] | `group_by_key` |
//! | [`join`] | `join`, `left_outer_join`, `right_outer_join`, `full_outer_join` |
//! | [`cogroup`] | `cogroup` |
//! | [`transform`] | `transform` |
//! | [`join_static`] | `join_static` |
//! | [`window`] | `window`, `count_by_window`, `reduce_by_window` |
//! | [`reduce_by_key_and_window`] | `reduce_by_key_and_window`, `reduce_by_key_and_window_inv` |
//! | [`count_by_value_and_window`] | `count_by_value_and_window` |
//! | [`update_state_by_key`] | `update_state_by_key` |
//! | [`map_with_state`] | `map_with_state` |
//! | [`top_n`] | `top_n`, `top_n_by_key` |
//! | [`output`] | `foreach_batch`, `print`, `save_as_text_files` |

pub mod cogroup;
pub mod count;
pub mod count_by_value;
pub mod count_by_value_and_window;
pub mod fan_out;
pub mod group_by_key;
pub mod join;
pub mod join_static;
pub mod map;
pub mod map_with_state;
pub mod output;
pub mod reduce;
pub mod reduce_by_key;
pub mod reduce_by_key_and_window;
pub mod repartition;
pub mod top_n;
pub mod transform;
pub mod union;
pub mod update_state_by_key;
pub mod window;
