terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      # 5.90.1 is the first release with stage.before_entry (PR #41663); 6.x is a major not tried here.
      version = ">= 5.90.1, < 6.0"
    }
  }
}
