//! Hydrating a record with one pass over each of its maps.
//!
//! autosurgeon's derived `Hydrate` reads a struct field by field, and each `get` of a map key
//! in automerge 0.12 positions an iterator on every op column of the document (find the slab,
//! decode its runs up to the op). A customer has about thirty such fields (top level, `server`,
//! `custody`), so hydrating one was a tenth of a pool sweep's CPU. [`hydrate`] answers those
//! reads from one `map_range` pass per map instead, which decodes each column once; everything
//! else (lists, text, nested lookups by index) goes to the document unchanged.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::RangeBounds;
use std::rc::Rc;

use automerge::{self as am, AutomergeError, ObjId, ObjType, Value};
use autosurgeon::{Hydrate, HydrateError, ReadDoc};

/// The visible entries of one map: each key's winning value and its object id.
type MapEntries = HashMap<String, (Value<'static>, ObjId)>;

/// A read-only view of a document that answers map keys from a per-map copy of its entries,
/// read in one pass on the map's first lookup.
struct MapsReadOnce<'d> {
    doc: &'d am::AutoCommit,
    maps: RefCell<HashMap<ObjId, Option<Rc<MapEntries>>>>,
}

impl<'d> MapsReadOnce<'d> {
    fn new(doc: &'d am::AutoCommit) -> Self {
        Self {
            doc,
            maps: RefCell::new(HashMap::new()),
        }
    }

    /// The entries of `obj` if it is a map (or table), read on first use; `None` for lists
    /// and text, whose reads go to the document.
    fn entries(&self, obj: &ObjId) -> Option<Rc<MapEntries>> {
        if let Some(known) = self.maps.borrow().get(obj) {
            return known.clone();
        }
        let entries = match am::ReadDoc::object_type(self.doc, obj) {
            Ok(ObjType::Map | ObjType::Table) => Some(Rc::new(
                am::ReadDoc::map_range(self.doc, obj, ..)
                    .map(|item| {
                        let id = item.id();
                        (item.key.into_owned(), (item.value.into_value(), id))
                    })
                    .collect(),
            )),
            _ => None,
        };
        self.maps.borrow_mut().insert(obj.clone(), entries.clone());
        entries
    }
}

impl ReadDoc for MapsReadOnce<'_> {
    type Parents<'a>
        = am::Parents<'a>
    where
        Self: 'a;

    fn get_heads(&self) -> Vec<am::ChangeHash> {
        ReadDoc::get_heads(self.doc)
    }

    fn get<P: Into<am::Prop>>(
        &self,
        obj: &ObjId,
        prop: P,
    ) -> Result<Option<(Value<'_>, ObjId)>, AutomergeError> {
        match prop.into() {
            am::Prop::Map(key) => match self.entries(obj) {
                Some(entries) => Ok(entries.get(&key).cloned()),
                None => ReadDoc::get(self.doc, obj, am::Prop::Map(key)),
            },
            index => ReadDoc::get(self.doc, obj, index),
        }
    }

    fn object_type<O: AsRef<ObjId>>(&self, obj: O) -> Option<am::ObjType> {
        ReadDoc::object_type(self.doc, obj)
    }

    fn map_range<'a, O, R>(&'a self, obj: O, range: R) -> am::iter::MapRange<'a>
    where
        R: RangeBounds<String> + 'a,
        O: AsRef<ObjId>,
        R: RangeBounds<String>,
    {
        ReadDoc::map_range(self.doc, obj, range)
    }

    fn list_range<O: AsRef<ObjId>, R: RangeBounds<usize>>(
        &self,
        obj: O,
        range: R,
    ) -> am::iter::ListRange<'_> {
        ReadDoc::list_range(self.doc, obj, range)
    }

    fn length<O: AsRef<ObjId>>(&self, obj: O) -> usize {
        ReadDoc::length(self.doc, obj)
    }

    fn text<O: AsRef<ObjId>>(&self, obj: O) -> Result<String, AutomergeError> {
        ReadDoc::text(self.doc, obj)
    }

    fn parents<O: AsRef<ObjId>>(&self, obj: O) -> Result<Self::Parents<'_>, AutomergeError> {
        ReadDoc::parents(self.doc, obj)
    }

    fn is_empty(&self) -> bool {
        ReadDoc::is_empty(self.doc)
    }
}

/// Hydrates `T` from the document's root like `autosurgeon::hydrate`, reading each map once.
pub fn hydrate<T: Hydrate>(doc: &am::AutoCommit) -> Result<T, HydrateError> {
    T::hydrate_map(&MapsReadOnce::new(doc), &am::ROOT)
}
