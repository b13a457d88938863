//! The names users write for options that take one of a few values. Each
//! such enum derives clap's `ValueEnum`: its variants and their names are
//! one table, read alike by the job reader (`Section::value`), the lineage
//! and `name()`.

/// The name users write for `v`.
pub fn name_of<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// Every name of `T`, in the enum's order.
pub fn names_of<T: clap::ValueEnum>() -> Vec<String> {
    T::value_variants().iter().map(name_of).collect()
}

/// The variant named `s` (ASCII case ignored).
pub fn parse<T: clap::ValueEnum>(s: &str) -> Option<T> {
    T::value_variants()
        .iter()
        .find(|v| name_of(*v).eq_ignore_ascii_case(s))
        .cloned()
}
