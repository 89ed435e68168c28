//! Timing run of the Sudoku pipeline at full size (kept out of the tests, which must stay fast):
//!
//! 1. `sudoku-generate` over the four complete tdoku lists (≈ 99.8k puzzles): per-list mean
//!    ratings and wall time;
//! 2. `hrm data sudoku` on the generated CSVs with `--subsample-size 1000 --num-aug 1000`
//!    (1000 groups x 1001 boards, the README's Sudoku-Extreme-1k recipe): wall time;
//! 3. loading the built train split back (validation included): wall time;
//! 4. from-scratch puzzles: 1000 random minimal ones, and 100 hill-climbed for 200 moves.
//!
//! ```text
//! cargo run --release -p hrm-data --example sudoku_bench -- \
//!     ../shared/data/sudoku/tdoku /tmp/sudoku-bench
//! ```

use std::path::PathBuf;
use std::time::Instant;

use hrm_data::format::load_split;
use hrm_data::sudoku::generator::{generate_sudoku_csv, SudokuGenerateOptions};
use hrm_data::sudoku::{build_sudoku, SudokuBuildOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: sudoku_bench TDOKU_DIR WORK_DIR");
        std::process::exit(2);
    }
    let tdoku = PathBuf::from(&args[1]);
    let work = PathBuf::from(&args[2]);
    std::fs::create_dir_all(&work)?;
    println!("rayon threads: {}", rayon::current_num_threads());

    let csv = work.join("sudoku-extreme-local");
    let mut g = SudokuGenerateOptions::new(csv.clone(), vec![tdoku], 0);
    g.force = true;
    let report = generate_sudoku_csv(&g)?;
    println!("{report}");

    let ds = work.join("sudoku-local-1k-aug-1000");
    let t = Instant::now();
    let b = build_sudoku(&SudokuBuildOptions {
        input_dir: csv,
        output_dir: ds.clone(),
        subsample_size: Some(1000),
        min_difficulty: None,
        num_aug: 1000,
        seed: 0,
        force: true,
    })?;
    println!("{b}");
    println!(
        "build 1000 x (1 + 1000): {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let split = load_split(&ds, "train")?;
    println!(
        "load_split(train): {} examples in {:.3} s (inputs memory-mapped: {})",
        split.num_examples(),
        t.elapsed().as_secs_f64(),
        split.sets[0].inputs.is_mapped()
    );

    // From-scratch puzzles (Option B): plain random minimal puzzles, then hill-climbed ones.
    for (n, steps) in [(1000usize, 0usize), (100, 200), (100, 2000)] {
        let mut g =
            SudokuGenerateOptions::new(work.join(format!("scratch-{n}-{steps}")), vec![], 0);
        g.from_scratch = Some(n);
        g.hill_climb_steps = steps;
        g.force = true;
        let r = generate_sudoku_csv(&g)?;
        let s = &r.sources[0];
        println!(
            "from scratch: {n} puzzles, {steps} hill-climb steps: {:.1} s, mean rating {:.2}, \
             median {}, max {}, mean givens {:.1}",
            r.seconds, s.mean_rating, s.median_rating, s.max_rating, s.mean_givens
        );
    }
    Ok(())
}
