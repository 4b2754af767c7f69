//! Enums whose values travel through the C ABI as `int32_t` and by the seed's name strings.
//! One macro defines the variants, their order (the C constants) and their names together,
//! so the three can never drift apart.

/// Defines a `Copy` enum with `ALL`, `name()`, `c_name()`, `from_name()` and `from_index()`.
#[macro_export]
macro_rules! named_enum {
    ($(#[$m:meta])* $vis:vis enum $ty:ident { $($var:ident = $name:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $ty { $($var,)* }

        impl $ty {
            /// Every value, in C-constant order.
            pub const ALL: &'static [$ty] = &[$($ty::$var,)*];

            /// The seed's name string.
            pub fn name(self) -> &'static str {
                match self { $($ty::$var => $name,)* }
            }

            /// The name as a NUL-terminated C string in static storage (nothing allocated, so
            /// nothing for a leak checker to find when a C host exits).
            pub fn c_name(self) -> &'static std::ffi::CStr {
                match self {
                    $($ty::$var => const {
                        match std::ffi::CStr::from_bytes_with_nul(concat!($name, "\0").as_bytes()) {
                            Ok(c) => c,
                            Err(_) => panic!("a name holds a NUL byte"),
                        }
                    },)*
                }
            }

            /// Looks a value up by the seed's name string.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }

            /// Range-checked conversion from the C constant.
            pub fn from_index(i: i64) -> Option<Self> {
                usize::try_from(i).ok().and_then(|i| Self::ALL.get(i).copied())
            }
        }
    };
}
