//! The figures' arithmetic and their JSON text: medians, numbers, sample lists.

/// The median (the mean of the middle two for an even count); `None` when empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub fn num(x: Option<f64>) -> String {
    x.map_or("null".into(), |v| format!("{}", v.round() as i64))
}

pub fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{}", x.round() as i64))
        .collect::<Vec<_>>()
        .join(",")
}
