//! containerd's Images service: the named image records that keep an
//! image's content from being collected.

use std::collections::HashMap;

use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    CreateImageRequest, GetImageRequest, Image, UpdateImageRequest,
};
use containerd_client::tonic::Code;

use super::{Containerd, Error, to_proto_descriptor};
use crate::image::Descriptor;

impl Containerd {
    /// The image record of that name; `None` when it does not exist.
    pub async fn image(&self, name: &str) -> Result<Option<Image>, Error> {
        let response = ImagesClient::new(self.channel.clone())
            .get(self.request(GetImageRequest {
                name: name.to_string(),
            }))
            .await;
        match response {
            Ok(r) => Ok(r.into_inner().image),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(Error::rpc("get image", s)),
        }
    }

    /// Creates the image record, or points an existing one at the new target.
    pub async fn put_image(
        &self,
        name: &str,
        target: &Descriptor,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        let image = Image {
            name: name.to_string(),
            labels,
            target: Some(to_proto_descriptor(target)),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.channel.clone());
        let created = images
            .create(self.request(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                images
                    .update(self.request(UpdateImageRequest {
                        image: Some(image),
                        update_mask: None,
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(|s| Error::rpc("update image", s))?;
                Ok(())
            }
            Err(s) => Err(Error::rpc("create image", s)),
        }
    }
}
