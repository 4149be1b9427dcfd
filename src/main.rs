fn main() {
    println!("workerpodautoscaler {}", env!("CARGO_PKG_VERSION"));
}
