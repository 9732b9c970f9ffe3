//! QPS, errors and p99 per 100 ms while something happens (a failover, a
//! switchover, a drain), written as CSV and drawn as an SVG chart.

use crate::BenchError;
use std::path::Path;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Bucket {
    pub ms: u64,
    pub ok: u32,
    pub errors: u32,
    pub p99_ms: f64,
}

/// Groups (ms, latency µs, ok) samples into 100 ms buckets.
pub fn buckets(samples: &[(u32, u32, bool)], total_ms: u64) -> Vec<Bucket> {
    let n = (total_ms / 100 + 1) as usize;
    let mut lat: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut out: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            ms: i as u64 * 100,
            ..Default::default()
        })
        .collect();
    for &(at, l, ok) in samples {
        let i = (at / 100) as usize;
        let Some(b) = out.get_mut(i) else { continue };
        if ok {
            b.ok += 1;
            lat[i].push(l);
        } else {
            b.errors += 1;
        }
    }
    for (b, mut l) in out.iter_mut().zip(lat) {
        if !l.is_empty() {
            l.sort_unstable();
            let idx = ((l.len() as f64) * 0.99).ceil() as usize;
            b.p99_ms = f64::from(l[idx.clamp(1, l.len()) - 1]) / 1000.0;
        }
    }
    out
}

pub fn write_csv(path: &Path, b: &[Bucket]) -> Result<(), BenchError> {
    let mut s = String::from("ms,qps,errors_per_s,p99_ms\n");
    for x in b {
        s.push_str(&format!(
            "{},{},{},{:.3}\n",
            x.ms,
            x.ok * 10,
            x.errors * 10,
            x.p99_ms
        ));
    }
    std::fs::write(path, s)?;
    Ok(())
}

/// Two stacked panels: queries and errors per second; p99 latency.
pub fn write_svg(
    path: &Path,
    b: &[Bucket],
    title: &str,
    event_ms: Option<u64>,
) -> Result<(), BenchError> {
    use plotters::prelude::*;
    let err =
        |e: &dyn std::fmt::Display| BenchError::Setup(format!("drawing {}: {e}", path.display()));
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(340);
    let max_x = b.last().map_or(1000, |x| x.ms).max(100) as f64 / 1000.0;
    let max_q = b
        .iter()
        .map(|x| (x.ok.max(x.errors) * 10) as f64)
        .fold(1.0, f64::max);
    let max_l = b.iter().map(|x| x.p99_ms).fold(1.0, f64::max);
    let mut c = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x, 0f64..max_q * 1.1)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("per second")
        .draw()
        .map_err(|e| err(&e))?;
    c.draw_series(LineSeries::new(
        b.iter().map(|x| (x.ms as f64 / 1000.0, (x.ok * 10) as f64)),
        &BLUE,
    ))
    .map_err(|e| err(&e))?
    .label("queries/s")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE));
    c.draw_series(LineSeries::new(
        b.iter()
            .map(|x| (x.ms as f64 / 1000.0, (x.errors * 10) as f64)),
        &RED,
    ))
    .map_err(|e| err(&e))?
    .label("errors/s")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], RED));
    if let Some(ms) = event_ms {
        let x = ms as f64 / 1000.0;
        c.draw_series(LineSeries::new(
            vec![(x, 0.0), (x, max_q * 1.1)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| err(&e))?
        .label("event")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLACK));
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    let mut l = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x, 0f64..max_l * 1.1)
        .map_err(|e| err(&e))?;
    l.configure_mesh()
        .x_desc("seconds")
        .y_desc("p99 ms")
        .draw()
        .map_err(|e| err(&e))?;
    l.draw_series(LineSeries::new(
        b.iter()
            .filter(|x| x.ok > 0)
            .map(|x| (x.ms as f64 / 1000.0, x.p99_ms)),
        &GREEN,
    ))
    .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::buckets;

    #[test]
    fn buckets_count_and_p99() {
        let mut s = Vec::new();
        for i in 0..100u32 {
            s.push((i, 1000 + i, true));
        }
        s.push((150, 0, false));
        let b = buckets(&s, 200);
        assert_eq!(b[0].ok, 100);
        assert_eq!(b[1].errors, 1);
        assert!((b[0].p99_ms - 1.098).abs() < 0.01, "{:?}", b[0]);
    }
}
