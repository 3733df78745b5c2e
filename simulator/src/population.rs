//! A population of customers who come back, for figures that depend on who is who
//! (re-identification risk): with [`Generator::with_population`](crate::Generator::with_population)
//! each event is redeemed by one of a fixed set of customers instead of a new person.
//!
//! The skews are the ones that make some people easy to single out:
//! - **visits**: customers are drawn by Zipf's law (exponent 1): a few come every day,
//!   most a few times;
//! - **places**: a country's cities by Zipf's law too (city sizes follow it), and one
//!   customer in three lives in a village: a postal code of the country's shape with every
//!   digit drawn, so that rural areas are many and thin;
//! - **ages**: birth years from 1930 to 2008 weighted like an ageing European pyramid (flat
//!   to 64, then 0.8, 0.5 and 0.15 per year of age at 65, 75 and 85);
//! - **habits**: each customer has a retailer, a home store (the retailer's stores drawn
//!   by Zipf's law: a few flagships, many small shops) used for 85 % of visits, and one
//!   home network address.
//!
//! The population is drawn from its own generator seeded from the stream's seed and the
//! tenant's name (each tenant its own customers), so the default stream (no population) is
//! byte for byte what it was.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::data::{Country, Name};

/// One customer, as every event they redeem shows them.
pub(crate) struct Customer {
    pub(crate) retailer: usize,
    /// Index into the retailer's stores.
    pub(crate) store: usize,
    pub(crate) home: &'static Country,
    pub(crate) first: Name,
    pub(crate) last: Name,
    pub(crate) city: &'static str,
    pub(crate) card: Vec<u8>,
    pub(crate) email: Vec<u8>,
    pub(crate) phone: Vec<u8>,
    pub(crate) birth_date: Vec<u8>,
    pub(crate) street: Vec<u8>,
    pub(crate) postal_code: Vec<u8>,
    pub(crate) ip: Vec<u8>,
    pub(crate) has_email: bool,
    pub(crate) has_phone: bool,
    /// Given, null (`Some(false)`) or absent.
    pub(crate) birth: Option<bool>,
}

/// The customers and how often each comes.
pub(crate) struct Population {
    pub(crate) customers: Vec<Customer>,
    /// Cumulative Zipf weights of the customers, for [`Population::visitor`].
    visits: Zipf,
}

impl Population {
    /// `size` customers, drawn by `customer` from a generator seeded with `seed`.
    pub(crate) fn new(
        seed: u64,
        size: usize,
        mut customer: impl FnMut(&mut StdRng) -> Customer,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Self {
            customers: (0..size).map(|_| customer(&mut rng)).collect(),
            visits: Zipf::new(size),
        }
    }

    /// The customer of the next event.
    pub(crate) fn visitor(&self, rng: &mut StdRng) -> &Customer {
        &self.customers[self.visits.sample(rng)]
    }
}

/// Zipf's law with exponent 1 over `0..n`: rank `i` has weight `1 / (i + 1)`.
pub(crate) struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(n: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n.max(1))
            .map(|i| {
                total += 1.0 / (i as f64 + 1.0);
                total
            })
            .collect();
        Self { cumulative }
    }

    pub(crate) fn sample(&self, rng: &mut StdRng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = rng.gen_range(0.0..total);
        self.cumulative
            .partition_point(|&c| c <= x)
            .min(self.cumulative.len() - 1)
    }
}

/// A birth year from 1930 to 2008, weighted by the pyramid above.
pub(crate) fn birth_year(rng: &mut StdRng) -> i64 {
    loop {
        let year = rng.gen_range(1930..=2008);
        let age = 2026 - year;
        let weight = match age {
            ..=64 => 1.0,
            65..=74 => 0.8,
            75..=84 => 0.5,
            _ => 0.15,
        };
        if rng.gen_bool(weight) {
            return year;
        }
    }
}

/// A home city, with its postal-code template written into `village`: a city by Zipf's
/// law, or, one time in three, a village near it (the city's template with every digit
/// drawn; the city's name stands for the village's, a field no policy keeps).
pub(crate) fn home_city(
    rng: &mut StdRng,
    cities: &'static [(&'static str, &'static str)],
    village: &mut String,
) -> &'static str {
    let index = Zipf::new(cities.len()).sample(rng);
    let (city, template) = cities[index];
    if rng.gen_bool(1.0 / 3.0) {
        village.clear();
        village.extend(
            template
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c }),
        );
    } else {
        village.clear();
        village.push_str(template);
    }
    city
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_the_first_ranks_and_reaches_the_last() {
        let zipf = Zipf::new(1000);
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        // Weight 1 against a harmonic total of about 7.49: about 13 % at rank 0.
        assert!((12_000..14_700).contains(&counts[0]), "{}", counts[0]);
        assert!(counts[0] > 5 * counts[9]);
        assert!(counts[500..].iter().any(|&c| c > 0));
    }

    #[test]
    fn the_pyramid_thins_out_with_age() {
        let mut rng = StdRng::seed_from_u64(2);
        let years: Vec<i64> = (0..50_000).map(|_| birth_year(&mut rng)).collect();
        let band = |from: i64, to: i64| years.iter().filter(|y| (from..=to).contains(*y)).count();
        assert!(years.iter().all(|y| (1930..=2008).contains(y)));
        // Ten years each: ages 30-39 against 86-95.
        assert!(band(1987, 1996) > 4 * band(1931, 1940));
    }
}
