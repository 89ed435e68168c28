//! The one HTML page of `hrm solve --html` and `hrm serve`: Sudoku, maze and ARC grids, the
//! segment slider and strip, changed cells, Q values, residuals and the verdict; CSS and JS
//! inline (no network needed).

use anyhow::Result;
use serde::Serialize;

/// The page (`page.html`): its script shows the JSON in `<script id="hrm-data">`, or, when that
/// is `null`, runs as the `hrm serve` app on the server's `/api` routes.
const PAGE: &str = include_str!("page.html");
/// Where the page's data goes.
const DATA_SLOT: &str = "__HRM_DATA__";

/// The page showing one solve (`report`: a [`GridReport`](crate::solve::GridReport) or an
/// [`ArcReport`](crate::solve::ArcReport)), for a file.
pub fn report_page(report: &impl Serialize) -> Result<String> {
    // `<` only occurs inside JSON strings, where `\u003c` means the same: no `</script>` can end
    // the data block early
    let json = serde_json::to_string(report)?.replace('<', "\\u003c");
    Ok(PAGE.replacen(DATA_SLOT, &json, 1))
}

/// The `hrm serve` app: the page with no data.
pub fn app_page() -> String {
    PAGE.replacen(DATA_SLOT, "null", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_embedded_once_and_cannot_close_the_script() {
        assert_eq!(PAGE.matches(DATA_SLOT).count(), 1);
        let page = report_page(&serde_json::json!({"checkpoint": "a</script><b>"})).unwrap();
        assert!(!page.contains(DATA_SLOT) && !page.contains("a</script>"));
        assert!(page.contains(r#"{"checkpoint":"a\u003c/script>\u003cb>"}"#));
        assert!(
            app_page().contains(r#"<script id="hrm-data" type="application/json">null</script>"#)
        );
    }
}
