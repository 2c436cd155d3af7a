//! Small data sets compiled into the library, so examples and tests run anywhere without a
//! download. Attribution and license: `runtime/data/README.md` (both CC BY 4.0, UCI Machine
//! Learning Repository).

use super::csv::{self, CsvOptions};

use super::{scale, Dataset, TensorDataset};
use crate::{Error, Float, Result};
use flate2::bufread::MultiGzDecoder;
use std::io::BufReader;
use std::path::Path;

/// UCI "Optical Recognition of Handwritten Digits": 64 pixels (0..16) then the label, per line.
const DIGITS: &[u8] = include_bytes!("../../data/digits.csv.gz");
/// Fisher's Iris: a header `150,4,setosa,versicolor,virginica`, then 4 features and the label.
const IRIS: &[u8] = include_bytes!("../../data/iris.csv");

/// The handwritten digits data set (E. Alpaydin, C. Kaynak, 1998; UCI, CC BY 4.0; the copy
/// scikit-learn bundles as `load_digits`): 1797 images of 8 × 8 pixels as features of shape
/// `[1, 8, 8]`, pixel values 0..16 scaled to `[0, 1]`, labels 0..9 (10 classes).
///
/// ```
/// use kiln_runtime::data::{self, Dataset};
/// # fn main() -> kiln_runtime::Result<()> {
/// let digits = data::digits::<f32>()?;
/// assert_eq!(digits.len(), 1797);
/// assert_eq!(digits.sample_shape(), [1, 8, 8]);
/// assert_eq!(digits.classes(), Some(10));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// None in practice: the data is compiled in and checked by the tests. (The parser's
/// [`Error::File`] would surface here if the embedded file were damaged.)
pub fn digits<F: Float>() -> Result<TensorDataset<F>> {
    let name = Path::new("<bundled digits.csv.gz>");
    let options = CsvOptions {
        classes: Some(10),
        ..CsvOptions::default()
    };
    let mut data = csv::from_reader(BufReader::new(MultiGzDecoder::new(DIGITS)), name, &options)?;
    scale(&mut data, F::from_f64(1.0 / 16.0));
    data.reshape_samples(&[1, 8, 8])?;
    Ok(data)
}

/// Fisher's Iris data set (R. A. Fisher, 1936; UCI, CC BY 4.0): 150 flowers, 4 features
/// (sepal length, sepal width, petal length, petal width, in cm), 3 classes with names
/// `setosa`, `versicolor`, `virginica`.
///
/// ```
/// use kiln_runtime::data::{self, Dataset};
/// # fn main() -> kiln_runtime::Result<()> {
/// let iris = data::iris::<f64>()?;
/// assert_eq!((iris.len(), iris.sample_shape()), (150, &[4][..]));
/// assert_eq!(iris.class_names().map(|names| names[2].as_str()), Some("virginica"));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// None in practice, as for [`digits`].
pub fn iris<F: Float>() -> Result<TensorDataset<F>> {
    let name = Path::new("<bundled iris.csv>");
    let options = CsvOptions {
        header: true,
        ..CsvOptions::default()
    };
    let (data, header) = csv::parse::<F>(IRIS, name, &options)?;
    // The header is `count,features,class names...`: check the counts it promises.
    let header = header.unwrap_or_default();
    let cells: Vec<&str> = header.split(',').map(str::trim).collect();
    let promised = (cells.first(), cells.get(1));
    let expected = (data.len().to_string(), data.sample_size().to_string());
    if promised != (Some(&expected.0.as_str()), Some(&expected.1.as_str())) {
        return Err(Error::file(
            name,
            format!(
                "line 1: header `{header}` does not describe {} samples of {} features",
                expected.0, expected.1
            ),
        ));
    }
    let names = cells[2..].iter().map(|s| s.to_string()).collect();
    data.with_class_names(names)
}
