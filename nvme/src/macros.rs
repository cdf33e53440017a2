//! Helper macro for wire enums whose unknown values must be rejected, not
//! transmuted.

/// Declares a `#[repr(u8)]` enum with `from_u8`, `TryFrom<u8>` (the error
/// carries the unknown raw value) and `From<Enum> for u8`.
macro_rules! u8_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $value ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Converts a raw wire value; `None` for values this crate does
            /// not know.
            pub const fn from_u8(v: u8) -> Option<Self> {
                $( if v == $value { return Some($name::$variant); } )+
                None
            }

            /// The raw wire value.
            pub const fn as_u8(self) -> u8 {
                self as u8
            }
        }

        impl TryFrom<u8> for $name {
            type Error = u8;
            fn try_from(v: u8) -> Result<Self, u8> {
                Self::from_u8(v).ok_or(v)
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                v as u8
            }
        }
    };
}

/// Declares the byte plumbing of a fixed-size queue entry kept in wire form
/// as `raw: [u8; SIZE]`: its size, and the checked conversions from and to
/// byte slices. SQEs and CQEs need exactly the same ones, so they live here
/// once.
macro_rules! wire_entry {
    ($name:ident, $what:literal, $size:literal) => {
        impl $name {
            #[doc = concat!("Size of ", $what, " on the wire.")]
            pub const SIZE: usize = $size;

            /// Wraps raw bytes.
            pub const fn from_array(raw: [u8; Self::SIZE]) -> Self {
                Self { raw }
            }

            #[doc = concat!("Parses the first ", stringify!($size), " bytes of `b`.")]
            pub fn from_bytes(b: &[u8]) -> Result<Self, $crate::error::ParseError> {
                $crate::error::need(Self::SIZE, b.len())?;
                Ok(Self {
                    raw: $crate::bytes::arr(b, 0),
                })
            }

            /// The wire bytes.
            pub const fn as_bytes(&self) -> &[u8; Self::SIZE] {
                &self.raw
            }

            #[doc = concat!("Copies the ", $what, " into the first ", stringify!($size), " bytes of `out`.")]
            pub fn write_to(&self, out: &mut [u8]) -> Result<(), $crate::error::ParseError> {
                $crate::error::need(Self::SIZE, out.len())?;
                out[..Self::SIZE].copy_from_slice(&self.raw);
                Ok(())
            }
        }
    };
}
