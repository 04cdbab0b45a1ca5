//! The shared broker state: for now only the subscription trie.

pub mod trie;
