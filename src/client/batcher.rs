//! Builds one batch, already encoded, bounded by count and by frame size.

use crate::bet::{AgencyId, BetRef};
use crate::net::frame::{encode_batch, encoded_bet_len, put_bet, BATCH_OVERHEAD};
use crate::net::{ProtocolError, MAX_PAYLOAD};
use bytes::BytesMut;

/// Builds one batch, already encoded, bounded by count and by frame size.
pub struct Batcher {
    /// `batch.maxAmount`: the most bets one batch may carry.
    max_amount: usize,
    /// The bets pushed so far, in their wire form.
    encoded: BytesMut,
    count: usize,
    /// The bet that did not fit the batch being built ([`push_or_carry`](Self::push_or_carry)),
    /// in its wire form: it opens the next batch. Empty when there is none.
    carry: BytesMut,
}

impl Batcher {
    pub fn new(max_amount: usize) -> Self {
        Batcher {
            max_amount: max_amount.max(1),
            encoded: BytesMut::with_capacity(MAX_PAYLOAD),
            count: 0,
            carry: BytesMut::new(),
        }
    }

    /// Adds `bet`, or, when the batch is full, keeps it (encoded) for the next
    /// batch and returns `false`: the batch is then ready, and the caller takes
    /// its frame before pushing again. The bet is copied either way, so the
    /// caller need not hold on to it (nor to the buffer it borrows from) while
    /// it sends.
    pub fn push_or_carry(&mut self, bet: &BetRef<'_>) -> bool {
        debug_assert!(self.carry.is_empty(), "a full batch takes no more bets");
        if self.try_push(bet) {
            return true;
        }
        put_bet(&mut self.carry, bet);
        false
    }

    /// A bet is carried: the batch is full and ready to go.
    pub fn is_full(&self) -> bool {
        !self.carry.is_empty()
    }

    /// Adds `bet` if it still fits (by count and by frame size); `false` leaves
    /// the batch as it was. Its size is computed once, here.
    pub fn try_push(&mut self, bet: &BetRef<'_>) -> bool {
        // A carried bet goes first: nothing joins a full batch.
        let fits = self.carry.is_empty()
            && self.count < self.max_amount
            && BATCH_OVERHEAD + self.encoded.len() + encoded_bet_len(bet) <= MAX_PAYLOAD;
        if fits {
            self.push(bet);
        }
        fits
    }

    /// Adds a bet unconditionally: an empty batch takes any valid bet (one always fits a frame).
    /// Not to a full batch (a carried bet would then come after it).
    pub fn push(&mut self, bet: &BetRef<'_>) {
        assert!(self.carry.is_empty(), "a full batch takes no more bets: take its frame first");
        put_bet(&mut self.encoded, bet);
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes the batch as one frame and empties the builder; a carried bet
    /// becomes the first of the next batch.
    pub fn take_frame(
        &mut self,
        agency: AgencyId,
        first_index: u64,
        out: &mut BytesMut,
    ) -> Result<usize, ProtocolError> {
        let count = self.count;
        encode_batch(out, agency, first_index, count, &self.encoded)?;
        self.encoded.clear();
        self.count = 0;
        if !self.carry.is_empty() {
            self.encoded.extend_from_slice(&self.carry);
            self.carry.clear();
            self.count = 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bet::{Bet, Date};
    use crate::net::{Request, MAX_FRAME};
    use proptest::prelude::*;
    use tokio_util::codec::Decoder;

    fn bet(name_len: usize) -> Bet {
        Bet {
            first_name: "a".repeat(name_len),
            last_name: "b".into(),
            document: "1".into(),
            birthdate: Date::new(2000, 1, 1).unwrap(),
            number: 1,
        }
    }

    /// `put_bet` as it was written before, field by field: the reference.
    fn put_bet_by_fields(out: &mut BytesMut, bet: &BetRef<'_>) {
        use bytes::BufMut;
        for s in [bet.first_name, bet.last_name, bet.document] {
            let len = s.len().min(u16::MAX as usize);
            out.put_u16(len as u16);
            out.put_slice(&s.as_bytes()[..len]);
        }
        out.put_u16(bet.birthdate.year());
        out.put_u8(bet.birthdate.month());
        out.put_u8(bet.birthdate.day());
        out.put_u16(bet.number);
    }

    /// A field: mostly short text of any characters, now and then one longer
    /// than a string length can say (the encoders cut it at `u16::MAX` bytes).
    fn field() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::collection::vec(any::<char>(), 0..20).prop_map(|c| c.into_iter().collect::<String>()),
            1 => (65_530usize..65_542).prop_map(|n| "é".repeat(n / 2) + &"x".repeat(n % 2)),
        ]
    }

    proptest! {
        /// The same bytes as the reference, appended after whatever the
        /// buffer held, whatever room it had.
        #[test]
        fn put_bet_writes_what_the_field_by_field_encoder_wrote(
            fields in prop::collection::vec(field(), 3),
            date in (1000u16..=9999, 1u8..=12, 1u8..=28),
            number in any::<u16>(),
            before in prop::collection::vec(any::<u8>(), 0..40),
            room in 0usize..64,
        ) {
            let bet = BetRef {
                first_name: &fields[0],
                last_name: &fields[1],
                document: &fields[2],
                birthdate: Date::new(date.0, date.1, date.2).unwrap(),
                number,
            };
            let mut out = BytesMut::with_capacity(before.len() + room);
            out.extend_from_slice(&before);
            let mut want = out.clone();
            put_bet(&mut out, &bet);
            put_bet_by_fields(&mut want, &bet);
            prop_assert_eq!(&out[..], &want[..]);
        }
    }

    /// Bets pushed with `push_or_carry`, a frame taken each time it says the
    /// batch is full (and once at the end), arrive in order, each once, in
    /// frames within both limits.
    #[test]
    fn a_carried_bet_opens_the_next_batch() {
        let bets: Vec<Bet> = (0..60).map(|i| bet([1, 40, 250][i % 3] + i % 6)).collect();
        for max_amount in [1, 2, 7, 1000] {
            let mut b = Batcher::new(max_amount);
            let mut frames = Vec::new();
            let mut next_index = 0;
            for one in &bets {
                if !b.push_or_carry(&one.as_ref()) {
                    assert!(b.is_full());
                    let mut f = BytesMut::new();
                    next_index += b.take_frame(1, next_index as u64, &mut f).unwrap();
                    assert!(!b.is_full() && b.len() == 1, "the carried bet opens the next batch");
                    frames.push(f);
                }
            }
            let mut f = BytesMut::new();
            b.take_frame(1, next_index as u64, &mut f).unwrap();
            frames.push(f);
            let mut got = Vec::new();
            for mut f in frames {
                assert!(f.len() <= MAX_FRAME);
                match crate::net::ServerCodec.decode(&mut f).unwrap().unwrap().unwrap() {
                    Request::Batch { first_index, bets, .. } => {
                        assert_eq!(first_index as usize, got.len());
                        assert!((1..=max_amount).contains(&bets.len()), "{} bets", bets.len());
                        got.extend(bets.to_bets());
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(got, bets, "max_amount {max_amount}");
        }
    }

    #[test]
    fn batches_respect_count_and_frame_size() {
        let one = bet(1);
        let mut b = Batcher::new(3);
        for _ in 0..3 {
            assert!(b.try_push(&one.as_ref()));
        }
        assert!(!b.try_push(&one.as_ref()), "count limit");
        assert_eq!(b.len(), 3);
        let mut frame = BytesMut::new();
        assert_eq!(b.take_frame(1, 0, &mut frame).unwrap(), 3);
        assert!(b.is_empty());
        let decoded = crate::net::ServerCodec.decode(&mut frame).unwrap().unwrap().unwrap();
        assert_eq!(decoded, Request::Batch { agency: 1, first_index: 0, bets: vec![one.clone(); 3].into() });

        // Long names: batches are cut by encoded size, every frame within the limit.
        let long = bet(250);
        let mut b = Batcher::new(1000);
        let (mut frames, mut total) = (Vec::new(), 0);
        for _ in 0..100 {
            if !b.try_push(&long.as_ref()) {
                let mut f = BytesMut::new();
                total += b.take_frame(1, 0, &mut f).unwrap();
                frames.push(f);
                b.push(&long.as_ref());
            }
        }
        let mut f = BytesMut::new();
        total += b.take_frame(1, 0, &mut f).unwrap();
        frames.push(f);
        assert_eq!(total, 100);
        assert!(frames.len() > 3);
        assert!(frames.iter().all(|f| f.len() <= MAX_FRAME));
    }
}
