//! What the generic store code needs of a sqlx engine, written once.
//!
//! sqlx has no single trait for "a database these queries run on": each capability (binding a
//! `&str`, decoding an `i64`, executing on a connection) is a bound of its own, and Rust does
//! not carry such bounds from a trait to its users. [`engine!`] wraps an `impl` block and adds
//! the whole list, so every generic impl in the store states the same contract in one place.
//! SQLite and PostgreSQL both meet it.

/// Adds the engine bounds to `impl<DB> Type { … }` or `impl<DB> Trait for Type { … }`, with
/// any attributes (such as `#[async_trait]`) kept on the impl.
macro_rules! engine {
    (@emit [$($attr:tt)*] [$($head:tt)*] $db:ident { $($body:tt)* }) => {
        $($attr)*
        impl<$db> $($head)*
        where
            $db: ::sqlx::Database,
            for<'c> &'c mut $db::Connection: ::sqlx::Executor<'c, Database = $db>,
            for<'c> &'c ::sqlx::Pool<$db>: ::sqlx::Executor<'c, Database = $db>,
            $db::Arguments: ::sqlx::IntoArguments<$db>,
            $db::QueryResult: $crate::store::rows::RowsAffected,
            for<'q> &'q str: ::sqlx::Encode<'q, $db> + ::sqlx::Type<$db>,
            for<'q> i64: ::sqlx::Encode<'q, $db> + ::sqlx::Type<$db>,
            for<'q> bool: ::sqlx::Encode<'q, $db> + ::sqlx::Type<$db>,
            for<'q> Option<i64>: ::sqlx::Encode<'q, $db> + ::sqlx::Type<$db>,
            for<'q> &'q [u8]: ::sqlx::Encode<'q, $db> + ::sqlx::Type<$db>,
            for<'r> String: ::sqlx::Decode<'r, $db> + ::sqlx::Type<$db>,
            for<'r> i64: ::sqlx::Decode<'r, $db> + ::sqlx::Type<$db>,
            for<'r> Vec<u8>: ::sqlx::Decode<'r, $db> + ::sqlx::Type<$db>,
            usize: ::sqlx::ColumnIndex<$db::Row>,
            for<'a> &'a str: ::sqlx::ColumnIndex<$db::Row>,
            ::sqlx::Transaction<'static, $db>: $crate::store::bulk::Statements,
        {
            $($body)*
        }
    };
    ($(#[$attr:meta])* impl<$db:ident> $tr:ident for $self_ty:ty { $($body:tt)* }) => {
        $crate::store::engine::engine! { @emit [$(#[$attr])*] [$tr for $self_ty] $db { $($body)* } }
    };
    ($(#[$attr:meta])* impl<$db:ident> $self_ty:ty { $($body:tt)* }) => {
        $crate::store::engine::engine! { @emit [$(#[$attr])*] [$self_ty] $db { $($body)* } }
    };
}

pub(crate) use engine;
