//! The subscription trie: being written.
