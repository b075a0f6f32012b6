//! The session payload: a shop cart of about 500 bytes, and a counter.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use speedy::{Readable, Writable};

/// The cart's attribute name.
pub const CART: &str = "cart";
/// The lost-update test's attribute name.
pub const COUNTER: &str = "counter";

/// Lines in a new cart: 14 lines encode to 488 bytes with speedy (Tandem's default
/// codec) and about 800 bytes of JSON (what tower-sessions keeps).
const LINES: u32 = 14;

/// One cart line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Readable, Writable)]
pub struct CartLine {
    /// The article.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// Price of one, in cents.
    pub unit_price_cents: u64,
}

/// The cart attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Readable, Writable)]
pub struct Cart {
    /// The lines.
    pub lines: Vec<CartLine>,
    /// How many times `POST /cart` changed it.
    pub updates: u64,
}

impl Cart {
    /// The cart every benchmark session starts with.
    pub fn new() -> Cart {
        Cart {
            lines: (0..LINES)
                .map(|i| CartLine {
                    sku: format!("SKU-{i:06}-BLUE-XL"),
                    quantity: i + 1,
                    unit_price_cents: 1999 + u64::from(i) * 100,
                })
                .collect(),
            updates: 0,
        }
    }

    /// What `POST /cart` does: one more of the next line's article.
    pub fn bump(&mut self) {
        if !self.lines.is_empty() {
            let index = usize::try_from(self.updates % self.lines.len() as u64).unwrap_or(0);
            self.lines[index].quantity = self.lines[index].quantity.wrapping_add(1);
        }
        self.updates += 1;
    }

    /// The response body of `GET /cart` and `POST /cart`.
    pub fn summary(&self) -> String {
        let quantity: u64 = self.lines.iter().map(|line| u64::from(line.quantity)).sum();
        let total: u64 = self
            .lines
            .iter()
            .map(|line| u64::from(line.quantity) * line.unit_price_cents)
            .sum();
        let mut text = String::with_capacity(64);
        let _ = writeln!(
            text,
            "lines={} quantity={quantity} total_cents={total} updates={}",
            self.lines.len(),
            self.updates
        );
        text
    }
}

impl Default for Cart {
    fn default() -> Cart {
        Cart::new()
    }
}
